"""Import stub for ``torchaudio``, put on PYTHONPATH by ``scripts/dev.sh`` only for the ComfyUI 0.33 host.

Why it exists: ComfyUI 0.33 imports torchaudio at module level for its audio models
(``comfy/sd.py`` -> ``comfy/ldm/lightricks/vae/audio_vae.py``, ``comfy/text_encoders/gemma4.py``,
``comfy/audio_encoders/``), so without it ``import comfy.sd`` fails and the server cannot load a
checkpoint. No torchaudio on the registry loads beside the venv's torch 2.14.1 (the newest there is
2.11.0), and torch 2.14.1 is pinned for torchvision (README, "Why torch 2.14.1"). This pack uses no
audio node, so the import only has to succeed: any attribute used at run time raises an
AttributeError that says this is a stub. 0.3.75 does not need it and does not get it.
"""


def __getattr__(name):
    if name.startswith("__"):
        raise AttributeError(name)
    raise AttributeError(f"torchaudio.{name}: this torchaudio is the CA-ToMe test stub "
                         "(devkit/stubs/torchaudio); audio nodes do not work on this test host")
