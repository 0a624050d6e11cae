"""execution-environment.yml: ansible-builder (v3) turns it into a build context (offline; building the image would
need the base image's registry) that installs the collection's Python and system dependencies and collections."""

import os
import subprocess

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")


def test_ansible_builder_creates_the_context(tmp_path):
    ctx = tmp_path / "context"
    subprocess.run(
        ["ansible-builder", "create", "-f", os.path.join(ROOT, "execution-environment.yml"), "-c", str(ctx)],
        check=True,
        capture_output=True,
    )
    containerfile = (
        (ctx / "Containerfile").read_text() if (ctx / "Containerfile").exists() else (ctx / "Dockerfile").read_text()
    )
    assert "quay.io/ansible/awx-ee:24.6.1" in containerfile
    assert "ansible-galaxy collection install" in containerfile
    requirements = (ctx / "_build" / "requirements.txt").read_text()
    assert "boto3" in requirements and "docker" in requirements
    collections = (ctx / "_build" / "requirements.yml").read_text()
    assert "selfhosted-stack-0.1.0.tar.gz" in collections and "community.docker" in collections
    assert "openssh-client" in (ctx / "_build" / "bindep.txt").read_text()
    assert (ctx / "_build" / "collections").is_dir()  # where the collection tarball goes


def test_collection_declares_its_ee_dependencies():
    with open(os.path.join(ROOT, "meta", "execution-environment.yml")) as fh:
        text = fh.read()
    assert "meta/ee-requirements.txt" in text and "meta/ee-bindep.txt" in text
    with open(os.path.join(ROOT, "galaxy.yml")) as fh:
        version = next(line.split(":")[1].strip() for line in fh if line.startswith("version:"))
    with open(os.path.join(ROOT, "awx", "ee-collections.yml")) as fh:
        assert f"selfhosted-stack-{version}.tar.gz" in fh.read()  # the EE installs the version galaxy.yml builds
