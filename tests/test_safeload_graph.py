"""safeload's operator allow-list: a loaded .pt2 graph may call ATen/prims operators and getitem, nothing else."""

import os
import re

import pytest
import torch

from cifar_resnet.export import export_program, save_program
from cifar_resnet.models import build_model
from cifar_resnet.safeload import UnsafeModelFile, check_program_graph, load_program_module

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # torch on one thread: see conftest

MARKER = {"path": None}  # where the custom op below writes, should it ever run


@torch.library.custom_op("cifar_resnet_test::writes_marker", mutates_args=())
def writes_marker(x: torch.Tensor) -> torch.Tensor:
    """A registered custom op outside the allowed namespaces, with a side effect to detect."""
    with open(MARKER["path"], "w") as file:
        file.write("ran")
    return x.clone()


@writes_marker.register_fake
def _(x: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(x)


def exported(arch: str) -> torch.export.ExportedProgram:
    torch.manual_seed(0)
    model = build_model(arch, 10, width=4)
    if arch == "airbench":
        model.fit_whitening(torch.randn(16, 3, 32, 32))
    return export_program(model.eval(), torch.randn(2, 3, 32, 32))


def call_before_linear(program: torch.export.ExportedProgram, target) -> None:
    """Insert a node calling `target` on the classifier's input: linear(target(x))."""
    graph = program.graph_module.graph
    linear = next(node for node in graph.nodes if node.target == torch.ops.aten.linear.default)
    features = linear.args[0]
    with graph.inserting_before(linear):
        inserted = graph.call_function(target, (features,))
    inserted.meta["val"] = features.meta["val"]
    linear.args = (inserted, *linear.args[1:])
    program.graph_module.recompile()


@pytest.mark.parametrize("arch", ["resnet18", "resnet9", "airbench"])
def test_the_projects_own_exports_pass_and_load(arch, tmp_path):
    program = exported(arch)
    check_program_graph(program, tmp_path / "program.pt2")
    save_program(program, tmp_path / "program.pt2")
    loaded = load_program_module(tmp_path / "program.pt2")
    images = torch.randn(3, 3, 32, 32)
    torch.testing.assert_close(loaded(images), program.module()(images))


def test_a_saved_graph_calling_a_custom_op_is_refused_and_runs_nothing(tmp_path):
    MARKER["path"] = tmp_path / "marker"
    program = exported("resnet18")
    call_before_linear(program, torch.ops.cifar_resnet_test.writes_marker.default)
    save_program(program, tmp_path / "program.pt2")  # torch's serializer and verifier accept it
    with pytest.raises(UnsafeModelFile) as refused:
        load_program_module(tmp_path / "program.pt2")
    message = str(refused.value)
    assert "\n" not in message and "calls cifar_resnet_test.writes_marker.default" in message
    assert not MARKER["path"].exists()


@pytest.mark.parametrize("target, name", [
    (os.system, re.escape(f"calls {os.system.__module__}.system (call_function)")),
    (torch.ops.higher_order.cond, re.escape("calls higher_order.cond (call_function)")),
    (torch.ops.cifar_resnet_test.writes_marker, re.escape("calls cifar_resnet_test.writes_marker (call_function)")),
])
def test_a_graph_calling_anything_but_aten_prims_or_getitem_is_refused(target, name, tmp_path):
    program = exported("resnet18")
    call_before_linear(program, target)
    with pytest.raises(UnsafeModelFile, match=name):
        check_program_graph(program, tmp_path / "program.pt2")


def test_nodes_inside_subgraphs_are_checked_too(tmp_path):
    program = exported("resnet18")
    subgraph = torch.fx.Graph()
    command = subgraph.placeholder("command")
    subgraph.output(subgraph.call_function(os.system, (command,)))
    program.graph_module.add_submodule("branch", torch.fx.GraphModule(torch.nn.Module(), subgraph))
    with pytest.raises(UnsafeModelFile, match=re.escape(f"calls {os.system.__module__}.system")):
        check_program_graph(program, tmp_path / "program.pt2")


def test_a_method_call_node_is_refused(tmp_path):
    program = exported("resnet18")
    graph = program.graph_module.graph
    linear = next(node for node in graph.nodes if node.target == torch.ops.aten.linear.default)
    with graph.inserting_before(linear):
        graph.call_method("numpy", (linear.args[0],))
    with pytest.raises(UnsafeModelFile, match=re.escape("calls numpy (call_method)")):
        check_program_graph(program, tmp_path / "program.pt2")
