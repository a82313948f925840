"""Installs the ``mmf`` and ``mmf_cli`` packages and the ``mmf_run`` console script."""
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent


def read_requirements():
    lines = (HERE / "requirements.txt").read_text().splitlines()
    return [line.split("#")[0].strip() for line in lines if line.split("#")[0].strip()]


def read_version():
    scope = {}
    exec((HERE / "mmf" / "version.py").read_text(), scope)
    return scope["__version__"]


setup(
    name="mmf-rice",
    version=read_version(),
    description="RICE: cross-view semantic alignment for livestreaming product recognition, "
    "on a lean MMF-style framework",
    long_description=(HERE / "README.md").read_text() if (HERE / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["mmf", "mmf.*", "mmf_cli", "mmf_cli.*"]),
    package_data={"mmf": ["configs/**/*.yaml", "configs/*.yaml"]},
    include_package_data=True,
    install_requires=read_requirements(),
    entry_points={
        "console_scripts": ["mmf_run = mmf_cli.run:run", "mmf_predict = mmf_cli.predict:main"]
    },
    license="BSD",
)
