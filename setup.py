from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent


def requirements() -> list[str]:
    lines = (HERE / "requirements.txt").read_text(encoding="utf-8").splitlines()
    return [ln.split("#")[0].strip() for ln in lines if ln.split("#")[0].strip()]


setup(
    name="paddleqa",
    version="0.1.0",
    description="Shrink Chinese extractive QA models (CMRC 2018) onto devices with the Paddle stack",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["paddleqa", "paddleqa.*"]),
    python_requires=">=3.10,<3.11",
    install_requires=requirements(),
    extras_require={"test": ["pytest==9.2.0", "hypothesis==6.112.5"]},
    entry_points={"console_scripts": ["paddleqa=paddleqa.cli:main"]},
)
