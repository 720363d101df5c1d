"""Reading collectives out of compiled TPU HLO text (no compiler: HLO written as the TPU
compiler prints it)."""

from editmgt_jax.aot import report

# A scan of 14 layers whose body all-reduces a [4, 256, 1024] bf16 array and whose condition is
# `counter < 14` (TPU HLO gives no known_trip_count), after an entry-level custom call whose
# multi-line kernel config has lines starting with "}" (a Pallas kernel).
HLO = """HloModule jit_step

%body.1 (param.1: (s32[], bf16[4,256,1024])) -> (s32[], bf16[4,256,1024]) {
  %param.1 = (s32[], bf16[4,256,1024]) parameter(0)
  %x.1 = bf16[4,256,1024]{2,1,0:T(8,128)(2,1)} get-tuple-element(%param.1), index=1
  %all-reduce.7 = bf16[4,256,1024]{2,1,0:T(8,128)(2,1)} all-reduce(%x.1), channel_id=3, to_apply=%add
  %i.1 = s32[]{:T(128)} get-tuple-element(%param.1), index=0
  ROOT %tuple.1 = (s32[], bf16[4,256,1024]) tuple(%i.1, %all-reduce.7)
}

%cond.1 (param.2: (s32[], bf16[4,256,1024])) -> pred[] {
  %constant.14 = s32[]{:T(128)} constant(14)
  %param.2 = (s32[], bf16[4,256,1024]) parameter(0)
  %gte.2 = s32[]{:T(128)} get-tuple-element(%param.2), index=0
  ROOT %lt.1 = pred[]{:T(512)} compare(%gte.2, %constant.14), direction=LT
}

ENTRY %main.1 (p.0: bf16[4,256,1024]) -> bf16[4,256,1024] {
  %p.0 = bf16[4,256,1024]{2,1,0:T(8,128)(2,1)} parameter(0)
  %kernel.1 = bf16[4,256,1024]{2,1,0} custom-call(%p.0), custom_call_target="tpu_custom_call", backend_config={"custom_call_config": {"body": "a
}}, metadata={op_name=\\"kernel\\"}
}}"}
  %zero.1 = s32[]{:T(128)} constant(0)
  %init.1 = (s32[], bf16[4,256,1024]) tuple(%zero.1, %kernel.1)
  %while.1 = (s32[], bf16[4,256,1024]) while(%init.1), condition=%cond.1, body=%body.1
  %out.1 = bf16[4,256,1024]{2,1,0} get-tuple-element(%while.1), index=1
  ROOT %all-gather.2 = bf16[4,256,1024]{2,1,0} all-gather(%out.1), dimensions={0}
}
"""


def test_collectives_in_a_scan_count_once_per_iteration():
    out = report.collectives(HLO)
    layer_bytes = 4 * 256 * 1024 * 2
    assert out["all-reduce"]["count"] == 1
    assert out["all-reduce"]["executed"] == 14  # from the condition's constant
    assert out["all-reduce"]["bytes"] == 14 * layer_bytes
    # The entry goes on past the kernel's multi-line config.
    assert out["all-gather"]["count"] == 1 and out["all-gather"]["bytes"] == layer_bytes


def test_a_loop_without_a_readable_bound_uses_the_given_trip_count():
    hlo = HLO.replace("direction=LT", "direction=NE")
    assert report.collectives(hlo, unknown_trip_count=3)["all-reduce"]["executed"] == 3


def test_pallas_kernels_are_counted():
    assert report.pallas_kernels(HLO) == 1
    assert report.pallas_kernels(HLO.replace("tpu_custom_call", "other")) == 0
