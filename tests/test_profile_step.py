"""The step profiler's op categories, and one profiled step (no timings are asserted)."""

from __future__ import annotations

from pathlib import Path

import pytest

from experiments import profile_step

HLO = """\
HloModule jit_train_chunk, is_scheduled=true, entry_computation_layout={(f32[3,3,8,16]{3,2,1,0})->f32[]}

%add_computation (x: f32[], y: f32[]) -> f32[] {
  %x = f32[] parameter(0)
  %y = f32[] parameter(1)
  ROOT %add.0 = f32[] add(%x, %y)
}

%fused_computation (param_0: f32[16,100,8], param_1: f32[16,8,16]) -> f32[16,100,16] {
  %param_0 = f32[16,100,8]{2,1,0} parameter(0)
  %param_1 = f32[16,8,16]{2,1,0} parameter(1)
  ROOT %dot.1 = f32[16,100,16]{2,1,0} dot(%param_0, %param_1), lhs_batch_dims={0}, lhs_contracting_dims={2}, \
rhs_batch_dims={0}, rhs_contracting_dims={1}, \
metadata={op_name="jit(train_chunk)/jvp(conv)/dot_general" stack_frame_id=3}
}

%fused_computation.1 (param_0.1: f32[64,8], param_1.1: f32[8]) -> f32[64,8] {
  %param_0.1 = f32[64,8]{1,0} parameter(0)
  %param_1.1 = f32[8]{0} parameter(1)
  %broadcast.1 = f32[64,8]{1,0} broadcast(%param_1.1), dimensions={1}, \
metadata={op_name="jit(train_chunk)/jvp(batchnorm)/mul"}
  %multiply.1 = f32[64,8]{1,0} multiply(%param_0.1, %broadcast.1), \
metadata={op_name="jit(train_chunk)/jvp(batchnorm)/mul"}
  %constant.1 = f32[] constant(0)
  %broadcast.2 = f32[64,8]{1,0} broadcast(%constant.1), dimensions={}
  ROOT %maximum.1 = f32[64,8]{1,0} maximum(%multiply.1, %broadcast.2), metadata={op_name="jit(train_chunk)/jvp()/max"}
}

%fused_computation.3 (param_0.3: f32[1024,64], param_1.3: f32[64,1024]) -> f32[64,1024] {
  %param_0.3 = f32[1024,64]{1,0} parameter(0)
  %transpose.3 = f32[64,1024]{1,0} transpose(%param_0.3), dimensions={1,0}, \
metadata={op_name="jit(train_chunk)/transpose(jvp(dense))/transpose"}
  %param_1.3 = f32[64,1024]{1,0} parameter(1)
  ROOT %add.3 = f32[64,1024]{1,0} add(%param_1.3, %transpose.3), metadata={op_name="jit(train_chunk)/optimizer/add"}
}

%fused_computation.2 (param_0.2: f32[64,8]) -> bf16[64,8] {
  %param_0.2 = f32[64,8]{1,0} parameter(0)
  ROOT %convert.2 = bf16[64,8]{1,0} convert(%param_0.2), \
metadata={op_name="jit(train_chunk)/jvp(conv)/convert_element_type"}
}

%body (arg: (s32[], f32[16,8,16], f32[16,100,8])) -> (s32[], f32[16,8,16], f32[16,100,8]) {
  %arg = (s32[], f32[16,8,16]{2,1,0}, f32[16,100,8]{2,1,0}) parameter(0)
  %i = s32[] get-tuple-element(%arg), index=0
  %kernel.1 = f32[16,8,16]{2,1,0} get-tuple-element(%arg), index=1
  %data.1 = f32[16,100,8]{2,1,0} get-tuple-element(%arg), index=2
  %dot.7 = f32[16,100,16]{2,1,0} dot(%data.1, %kernel.1), lhs_batch_dims={0}, lhs_contracting_dims={2}, \
rhs_batch_dims={0}, rhs_contracting_dims={1}, metadata={op_name="jit(train_chunk)/jvp(conv)/while/body/dot_general"}
  %dot.8 = f32[16,8,8]{2,1,0} dot(%data.1, %data.1), lhs_batch_dims={0}, lhs_contracting_dims={1}, \
rhs_batch_dims={0}, rhs_contracting_dims={1}, metadata={op_name="jit(train_chunk)/transpose(jvp(conv))/dot_general"}
  ROOT %tuple.2 = (s32[], f32[16,8,16]{2,1,0}, f32[16,100,8]{2,1,0}) tuple(%i, %kernel.1, %data.1)
}

ENTRY %main.9 (kernel: f32[3,3,8,16], dense: f32[2048,1024], images: u8[256,48,48], idx: s32[64], k: f32[16,8,16], \
s: f32[8]) -> f32[] {
  %kernel = f32[3,3,8,16]{3,2,1,0} parameter(0), metadata={op_name="state.params"}
  %dense = f32[2048,1024]{1,0} parameter(1), metadata={op_name="state.params"}
  %images = u8[256,48,48]{2,1,0} parameter(2)
  %idx = s32[64]{0} parameter(3)
  %k = f32[16,8,16]{2,1,0} parameter(4)
  %s = f32[8]{0} parameter(5)
  %c0 = f32[] constant(0)
  %x = f32[64,2048]{1,0} broadcast(%c0), dimensions={}
  %g = f32[64,1024]{1,0} broadcast(%c0), dimensions={}
  %t = f32[16,100,8]{2,1,0} broadcast(%c0), dimensions={}
  %gt = f32[16,100,16]{2,1,0} broadcast(%c0), dimensions={}
  %h = f32[64,8]{1,0} broadcast(%c0), dimensions={}
  %d = f32[16,4,16]{2,1,0} broadcast(%c0), dimensions={}
  %ynn_fusion = f32[16,100,16]{2,1,0} fusion(%t, %k), kind=kCustom, calls=%fused_computation, \
metadata={op_name="jit(train_chunk)/jvp(conv)/dot_general" stack_frame_id=3}
  %dot.2 = f32[16,8,16]{2,1,0} dot(%t, %gt), lhs_batch_dims={0}, lhs_contracting_dims={1}, rhs_batch_dims={0}, \
rhs_contracting_dims={1}, metadata={op_name="jit(train_chunk)/transpose(jvp(conv))/transpose"}
  %dot.3 = f32[16,100,8]{2,1,0} dot(%gt, %k), lhs_batch_dims={0}, lhs_contracting_dims={2}, rhs_batch_dims={0}, \
rhs_contracting_dims={2}, metadata={op_name="jit(train_chunk)/transpose(jvp(conv))/dot_general"}
  %dot.4 = f32[2048,1024]{1,0} dot(%x, %g), lhs_contracting_dims={0}, rhs_contracting_dims={0}, \
metadata={op_name="jit(train_chunk)/transpose(jvp(dense))/transpose"}
  %dot.5 = f32[64,2048]{1,0} dot(%g, %dense), lhs_contracting_dims={1}, rhs_contracting_dims={1}, \
metadata={op_name="jit(train_chunk)/transpose(jvp(dense))/dot_general"}
  %dot.6 = f32[16,4,8]{2,1,0} dot(%d, %k), lhs_batch_dims={0}, lhs_contracting_dims={2}, rhs_batch_dims={0}, \
rhs_contracting_dims={2}, metadata={op_name="jit(train_chunk)/transpose(jvp(conv))/dot_general"}
  %wrapped_reduce-window = f32[2,16]{1,0} reduce-window(%gt, %c0), window={size=8x50x1 stride=8x50x1}, \
to_apply=%add_computation
  %reduce.1 = f32[16]{0} reduce(%wrapped_reduce-window, %c0), dimensions={0}, to_apply=%add_computation, \
metadata={op_name="jit(train_chunk)/transpose(jvp(conv))/reduce_sum"}
  %max_fusion = f32[64,8]{1,0} fusion(%h, %s), kind=kLoop, calls=%fused_computation.1, \
metadata={op_name="jit(train_chunk)/jvp()/max"}
  %convert_fusion = bf16[64,8]{1,0} fusion(%h), kind=kLoop, calls=%fused_computation.2
  %add_fusion = f32[64,1024]{1,0} fusion(%g, %g), kind=kLoop, calls=%fused_computation.3, \
metadata={op_name="jit(train_chunk)/optimizer/add"}
  %gather.1 = u8[64,48,48]{2,1,0} gather(%images, %idx), offset_dims={1,2}, collapsed_slice_dims={0}, \
start_index_map={0}, index_vector_dim=1, slice_sizes={1,48,48}, metadata={op_name="jit(train_chunk)/jit(_take)/gather"}
  %zero = s32[] constant(0)
  %tuple.1 = (s32[], f32[16,8,16]{2,1,0}, f32[16,100,8]{2,1,0}) tuple(%zero, %k, %t)
  %while.1 = (s32[], f32[16,8,16]{2,1,0}, f32[16,100,8]{2,1,0}) while(%tuple.1), condition=%cond, body=%body, \
metadata={op_name="jit(train_chunk)/jvp(conv)/while"}
  %multiply.9 = f32[64,2048]{1,0} multiply(%x, %x), metadata={op_name="jit(train_chunk)/jvp()/mul"}
  ROOT %reduce.2 = f32[] reduce(%multiply.9, %c0), dimensions={0,1}, to_apply=%add_computation, \
metadata={op_name="jit(train_chunk)/jvp(loss)/reduce_sum"}
}
"""


def test_categorize_names_each_op_by_its_heaviest_instruction_and_scope() -> None:
    categories = profile_step.categorize(HLO)
    expected = {
        "ynn_fusion": "conv forward",
        "dot.2": "conv weight grad",  # neither operand comes from the weights
        "dot.3": "conv input grad",  # k is a weight (a float input of rank >= 2)
        "dot.4": "dense weight grad",
        "dot.5": "dense input grad",
        "dot.6": "conv input grad",  # smaller than both operands (a deep layer at a small batch), still an input's
        "wrapped_reduce-window": "conv other (grad)",  # no metadata: its user's category
        "reduce.1": "conv other (grad)",
        "max_fusion": "batchnorm",  # BatchNorm's scaling and the unnamed ReLU: the named op wins
        "convert_fusion": "convert",
        "add_fusion": "optimizer",  # a gradient's transpose and the update: both named, the root wins
        "gather.1": "augment",
        "while.1": None,  # control flow: the trace shows its body's ops
        "dot.7": "conv forward",  # its kernel comes into the loop from the weights
        "dot.8": "conv weight grad",  # no operand from the weights
        "multiply.9": "other",
        "reduce.2": "loss",
    }
    assert {name: categories[name] for name in expected} == expected
    assert set(categories.values()) <= {*profile_step.CATEGORIES, None}


def test_scope_of_takes_the_innermost_known_name() -> None:
    assert profile_step.scope_of("jit(train_chunk)/transpose(jvp(conv))/while/body/dot_general") == "conv"
    assert profile_step.scope_of("jit(train_chunk)/jvp(augment)/jit(_uniform)/dropout/add") == "dropout"
    assert profile_step.scope_of("jit(train_chunk)/jvp()/dot_general") is None


def test_op_times_share_each_moment_among_the_ops_in_flight() -> None:
    def op(name: str, ts: float, dur: float, module: str = "jit_step") -> dict:
        return {"ph": "X", "name": name, "ts": ts, "dur": dur, "args": {"hlo_module": module, "hlo_op": name}}

    def end(name: str, ts: float) -> dict:
        return {"ph": "X", "name": f"end: {name}", "ts": ts, "dur": 0.1}

    events = [op("while.1", 0, 40), op("a", 0, 10), end("a", 10), op("b", 5, 1), end("b", 25), end("while.1", 40)]
    events += [op("c", 30, 5), end("c", 35), op("c", 50, 5, "jit_other"), end("c", 55)]
    flight, durations = profile_step.op_times(events, "jit_step", skip={"while.1"})
    # a alone for 5 µs, then shares 5 µs with b; b (asynchronous: a 1 µs event) runs on alone until its end
    assert flight == pytest.approx({"a": 7.5, "b": 17.5, "c": 5.0})
    assert durations == {"a": 10, "b": 1, "c": 5}


@pytest.mark.slow
def test_worker_profiles_one_seed_cnn_step(tmp_path: Path) -> None:
    from flax import nnx

    conv_call = nnx.Conv.__call__
    args = profile_step.build_parser().parse_args(["--steps", "1", "--batch", "4", "--trace-dir", str(tmp_path)])
    args.worker = "seed_cnn"
    row = profile_step.worker(args)
    assert nnx.Conv.__call__ is conv_call  # the named scopes are gone again
    assert row["steps"] == 1 and row["traced_calls"] == 1 and row["wall_ms_per_step"] > 0
    assert sum(c["share"] for c in row["categories"].values()) == pytest.approx(1.0)  # of the wall time
    assert sum(c["events_ms"] for c in row["categories"].values()) == pytest.approx(row["events_ms_per_step"])
    assert row["categories"]["conv forward"]["ms_per_step"] > 0
    assert row["categories"]["conv weight grad"]["ms_per_step"] > 0
    assert row["config"]["model"]["compute_dtype"] == "float32"
    assert (
        list(tmp_path.glob("seed_cnn/plugins/profile/*/*.xplane.pb"))
        and (tmp_path / "seed_cnn/train_chunk.hlo.txt").is_file()
    )
    assert "| conv forward |" in profile_step.format_table("seed_cnn", row)
