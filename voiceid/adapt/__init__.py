"""Speaker adaptation of the pretrained encoder (stage ``adapt``): ``dvector`` fine-tuned on in-domain speakers.

Resemblyzer's GE2E encoder knows voices from LibriSpeech and VoxCeleb; on other speech (1 s
digits, another language, another microphone) its space still separates speakers, but not the
ones that matter here as well as it could.  This stage fine-tunes a copy of it with an additive
angular margin softmax on the *training* clips of the pipeline's own training speakers
(enrolled train rows and background speakers; never val, test or unknown speakers) and
embeds every accepted clip with it: the ``dvector_ft`` feature set.  Selection then weighs
it against the pretrained ``dvector`` on val, like any other set.

Modules: ``params`` (the ``adapt`` section), ``finetune`` (the training loop: frames +
labels in, weights out), ``run`` (which rows train it, decoding, the embedding table and
its files: ``write_adapted``).

May import: torch, resemblyzer (through ``voiceid.features.dvector``), ``voiceid.features``, ``voiceid.scoring``,
``voiceid.data.audio``, ``voiceid.ecapa.train`` (its AAM-softmax head and seeding), ``voiceid.atomic``, numpy,
pandas; never ``grid``, ``select``, ``serve`` or MLflow.
"""
