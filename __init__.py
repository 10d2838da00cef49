"""ComfyUI entry point of the CA-ToMe node pack (ComfyUI imports this from custom_nodes/).

ComfyUI imports the folder as a package; outside ComfyUI (pytest collecting this folder as a
loose file, whatever the checkout's folder is called) there is nothing to register, so the
folder still imports cleanly. Inside ComfyUI the nodes import eagerly, so any error shows with
its full traceback in ComfyUI's log.
"""

import importlib.util

if __package__ and importlib.util.find_spec("comfy_api") is not None:
    from .nodes import comfy_entrypoint

    __all__ = ["comfy_entrypoint"]
else:
    __all__ = []
