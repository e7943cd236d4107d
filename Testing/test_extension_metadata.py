"""The extension's catalog metadata as the Slicer ExtensionsIndex reads it: literal addresses in CMakeLists.txt, a
named maintainer, a catalog entry draft (RMAMambaSegmentation.json) that agrees with CMakeLists.txt, and
screenshots described as what they are (rendered overlays, not captures of Slicer)."""

from __future__ import annotations

import json
import re

from conftest import PROJECT_ROOT

CMAKE = PROJECT_ROOT / "CMakeLists.txt"
CATALOG_ENTRY = PROJECT_ROOT / "RMAMambaSegmentation.json"
SCHEMA = "https://raw.githubusercontent.com/Slicer/Slicer/main/Schemas/slicer-extension-catalog-entry-schema-v1.0.1.json"
#: The catalog entry schema allows these keys and nothing else (``additionalProperties: false``).
CATALOG_KEYS = {"$schema", "build_dependencies", "build_subdirectory", "category", "scm_revision", "scm_type",
                "scm_url", "tier"}


def cmake_values() -> dict[str, str]:
    """``set(EXTENSION_X "value")`` lines of the top-level CMakeLists.txt, as written (no CMake evaluation)."""
    text = CMAKE.read_text(encoding="utf-8")
    return dict(re.findall(r'^set\((EXTENSION_\w+) "([^"]*)"\)$', text, re.M))


def test_icon_and_screenshot_addresses_are_written_out_in_full():
    values = cmake_values()
    repository = values["EXTENSION_HOMEPAGE"].split("#")[0]
    raw = repository.replace("https://github.com/", "https://raw.githubusercontent.com/") + "/main/"
    urls = [values["EXTENSION_ICONURL"], *values["EXTENSION_SCREENSHOTURLS"].split()]
    assert len(urls) >= 2
    for url in urls:
        assert "${" not in url and url.startswith(raw), url
        assert (PROJECT_ROOT / url[len(raw):]).is_file(), url
    assert repository == "https://github.com/rmamamba/SlicerRMAMambaSegmentation"


def test_contributors_name_the_project_organisation_not_a_placeholder():
    contributors = cmake_values()["EXTENSION_CONTRIBUTORS"]
    assert contributors == "RMAMambaSegmentation developers (rmamamba)"
    for placeholder in ("John Doe", "AnyWare", "contributors", "TODO", "Seed"):
        assert placeholder.lower() not in contributors.lower()


def test_catalog_entry_draft_agrees_with_cmake():
    entry = json.loads(CATALOG_ENTRY.read_text(encoding="utf-8"))
    values = cmake_values()
    assert set(entry) <= CATALOG_KEYS and {"$schema", "category", "scm_url"} <= set(entry)
    assert entry["$schema"].rstrip("#") == SCHEMA
    assert entry["category"] == values["EXTENSION_CATEGORY"] == "Segmentation"
    assert entry["scm_url"] == values["EXTENSION_HOMEPAGE"].split("#")[0]
    assert entry["scm_revision"] == "main"  # the branch the raw icon and screenshot URLs point into
    assert f"/{entry['scm_revision']}/Resources/" in values["EXTENSION_ICONURL"]
    assert entry["build_dependencies"] == values["EXTENSION_DEPENDS"].split() == ["PyTorch"]
    assert entry["tier"] in (1, 3, 5) and entry.get("build_subdirectory", ".") == "."


def test_screenshots_are_described_as_rendered_overlays():
    description = cmake_values()["EXTENSION_DESCRIPTION"]
    assert "rendered PNG overlays" in description and "not captures of the Slicer window" in description
    slicer_docs = (PROJECT_ROOT / "docs" / "slicer.md").read_text(encoding="utf-8")
    section = " ".join(slicer_docs.split("## Screenshots", 1)[1].split("\n## ", 1)[0].split())
    for name in ("example_segmentation.png", "liver_overlay_mr.png", "liver_overlay_ct.png"):
        assert name in section and (PROJECT_ROOT / "Resources" / "Screenshots" / name).is_file()
    assert "not screenshots of Slicer" in section
    make_images = " ".join((PROJECT_ROOT / "Resources" / "make_images.py").read_text(encoding="utf-8").split())
    assert "not screenshots of Slicer" in make_images
