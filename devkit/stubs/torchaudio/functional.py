"""Empty ``torchaudio.functional`` for the import stub; see ``devkit/stubs/torchaudio/__init__.py``."""


def __getattr__(name):
    if name.startswith("__"):
        raise AttributeError(name)
    raise AttributeError(f"torchaudio.functional.{name}: this torchaudio is the CA-ToMe test stub "
                         "(devkit/stubs/torchaudio); audio nodes do not work on this test host")
