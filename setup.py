"""Build settings that setup.cfg cannot express: the MONAI bundles ship inside the package.

The repository's top-level ``bundles/`` stays the source of truth (each bundle runs from its own folder, as the
MONAI model zoo requires); a wheel or sdist install carries it as ``medssl/bundles/``, where
``medssl.workflows.bundle.bundles_dir`` finds it.
"""

from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["medssl", "medssl.*"]) + ["medssl.bundles"],
    package_dir={"medssl.bundles": "bundles"},
    package_data={"medssl.bundles": ["meta_schema.json", "*/LICENSE", "*/configs/*", "*/docs/*"]},
)
