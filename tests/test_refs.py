"""Typed references (synth.refs): a config field says it names a source, a stage, an extractor
or a classifier, and the manifest loader validates every one in one place, wherever it sits
(nested tables, optional fields, lists), with its full location in the message."""

from pydantic import Field

from conftest import synth, write_manifest
from synth.protocols import PluginConfig
from synth.refs import ExtractorRef, Ref, SourceRef, StageRef, references


class Inner(PluginConfig):
    source: SourceRef | None = None
    extractor: ExtractorRef = "shapes"


class Outer(PluginConfig):
    reference: Inner = Field(default_factory=Inner)
    labeller: StageRef | None = None
    extra: list[SourceRef] = Field(default_factory=list)
    plain: dict = Field(default_factory=dict)  # a dict that is not a reference


def test_references_are_found_nested_optional_and_in_lists():
    cfg = Outer(reference=Inner(source={"name": "shapes"}), labeller={"name": "shapes_classify"}, extra=[{"name": "folder", "path": "a"}], plain={"name": "x"})
    found = {(loc, ref.kind) for loc, ref, _ in references(cfg)}
    assert found == {("reference.source", "source"), ("reference.extractor", "extractor"), ("labeller", "stage"), ("extra[0]", "source")}
    assert {loc for loc, _, _ in references(Outer())} == {"reference.extractor"}  # unset optional ones are skipped
    assert [r for _, r, _ in references(cfg) if r.kind == "stage"] == [Ref("stage", ("transform",))]


HEAD = """
[dataset]
name = "r"
output = "out"
num_samples = 4
classes = ["background", "circle", "square", "triangle"]

[generator]
name = "diffusers"
model = "builtin:shapes-32"

[[stage]]
name = "generate"
"""


def _one_line(tmp_path, stages: str) -> str:
    res = synth("validate", write_manifest(tmp_path, HEAD + stages))
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    (line,) = res.stderr.strip().splitlines()
    return line


def test_a_reference_inside_a_labellers_table_is_checked_with_its_location(tmp_path):
    # the source is misnamed: said before anything else is looked at
    line = _one_line(tmp_path, '[[stage]]\nname = "views"\nsigma = "auto"\nk = 2\nauto = { labeller = { name = "shapes_clasify" } }\n')
    assert "stage[1].auto.labeller.name: unknown stage 'shapes_clasify'" in line, line
    # a source stage where a labelling stage is wanted
    line = _one_line(tmp_path, '[[stage]]\nname = "views"\nsigma = "auto"\nk = 2\nauto = { labeller = { name = "shapes" } }\n')
    assert "stage[1].auto.labeller: 'shapes' is a source stage" in line, line
    # the embedded source's own look at the plan: a folder with no images
    (tmp_path / "empty").mkdir()
    line = _one_line(tmp_path, '[[stage]]\nname = "direction"\nbefore = { name = "folder", path = "empty" }\nafter = { name = "shapes" }\n')
    assert "stage[1].before.path: no images in" in line, line
