"""The SASS reader of the compile report (sdkernels.tools.sass) on hand-written listings in nvdisasm's format."""

from __future__ import annotations

from sdkernels.tools.sass import instruction_class, main_loop_report, per_iteration

LISTING = """
        /*0000*/                   LDC R1, c[0x0][0x28] ;
        /*0010*/                   S2R R8, SR_TID.X ;
.L_x_0:
        /*0020*/                   LDGSTS.E.BYPASS.128 [R35], desc[UR16][R24.64] ;
.L_x_1:
        /*0030*/                   HGMMA.64x64x16.F32 R24, gdesc[UR4], R24 ;
        /*0040*/                   IMAD R29, R18, 0x8, R104 ;
        /*0050*/              @!P0 BRA `(.L_x_1) ;
        /*0060*/                   SYNCS.PHASECHK.TRANS64.TRYWAIT P0, [UR22+0x10000], R2 ;
        /*0070*/              @!P0 BRA `(.L_x_9) ;
.L_x_8:
        /*0080*/                   HGMMA.64x256x16.F32 R24, R152, gdesc[UR4].tnspB, R24 ;
        /*0090*/                   MUFU.EX2 R6, R16 ;
        /*00a0*/                   FFMA.FTZ R21, R21, R7, R12 ;
        /*00b0*/                   UIADD3 UR13, UR13, 0x1, URZ ;
        /*00c0*/                   BAR.SYNC.DEFER_BLOCKING 0x0 ;
        /*00d0*/              @!P4 BRA `(.L_x_0) ;
        /*00e0*/                   EXIT ;
.L_x_2:
        /*00f0*/                   BRA `(.L_x_2);
.L_x_9:
        /*0100*/                   BRA `(.L_x_8);
        /*0110*/                   NOP;
"""


def test_classes() -> None:
    assert instruction_class("HGMMA.64x64x16.F32") == "mma"
    assert instruction_class("UIADD3") == "int" and instruction_class("IMAD.MOV.U32") == "int"
    assert instruction_class("LDSM.16.M88.4") == "lds" and instruction_class("UTMALDG.2D") == "tma"
    assert instruction_class("F2FP.F16.F32.PACK_AB") == "convert" and instruction_class("FMNMX") == "fp32"


def test_main_loop_nested_loop_and_wait_retry_blocks() -> None:
    report = main_loop_report(LISTING)
    loop, inner, kernel = report["loop"], report["inner"], report["kernel"]
    # The outer loop .L_x_0 .. BRA .L_x_0 (12 instructions), not the retry jump back into it from the end.
    assert loop["total"] == 12 and loop["mma"] == 2 and loop["mma:HGMMA.64x256x16.F32"] == 1
    assert loop["mufu"] == 1 and loop["fp32"] == 1 and loop["barrier"] == 2 and loop["ldgsts"] == 1
    assert inner["total"] == 3 and inner["mma"] == 1
    assert kernel["total"] == 17  # the trailing NOP is padding
    per_tile = per_iteration(report, inner_trips=4)
    assert per_tile["total"] == 12 + 3 * 3 and per_tile["mma:HGMMA.64x64x16.F32"] == 4


def test_kernel_without_loops() -> None:
    report = main_loop_report("        /*0000*/                   EXIT ;\n")
    assert report["loop"] == {} and report["kernel"]["total"] == 1
