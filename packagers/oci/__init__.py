"""A small daemonless OCI image toolkit: values (`Image`, `Layer`, `Digest`) and small functions over them.

- `layer.build_layer`: a reproducible gzip tar layer from files;
- `image.append_layers` / `with_config` / `canonical`: new image values from old ones;
- `layout.write` / `layout.read`: OCI image layout on disk;
- `registry.RegistryClient`: pull and push over the OCI distribution API;
- `validate.validate_image`: the checks Lambda applies and local tools skip.
"""

from .digest import Digest
from .image import Addendum, Image, Layer, Platform, append_layers, canonical, with_config
from .validate import validate_image

__all__ = ["Addendum", "Digest", "Image", "Layer", "Platform", "append_layers", "canonical", "validate_image",
           "with_config"]
