"""Build settings that setup.cfg cannot express: the MONAI bundles ship inside the package.

The repository's top-level ``bundles/`` stays the source of truth (each bundle runs from its own folder, as the
MONAI model zoo requires); a wheel or sdist install carries it as ``medssl/bundles/``, where
``medssl.workflows.bundle.bundles_dir`` finds it.
"""

from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["medssl", "medssl.*"]) + ["medssl.bundles"],
    package_dir={"medssl.bundles": "bundles"},
    # configs/common.json, evaluate.json, multi_gpu_train.json and logging.conf are links to bundles/_common in the
    # source tree; the build copies what they name, so each bundle of the wheel stands on its own
    package_data={"medssl.bundles": ["meta_schema.json", "*/LICENSE", "*/configs/*", "*/docs/*", "*/models/model.pt",
                                     "*/models/model.ts"]},
)
