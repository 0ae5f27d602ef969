"""benchmarks/scale_report: the int8-tables bundles are labelled and enter the file targets."""
from benchmarks.scale_report import bundle_label, targets


def _arm(name, precision, mib):
    return {"name": name, "backend": "lite-arm", "precision": precision, "file_bytes": int(mib * 2**20),
            "seq_len": None, "threads": None, "latency_ms_p50": None, "max_abs_logit_diff": None}


def testbundle_labels_name_what_each_bundle_holds():
    assert bundle_label("fp32", "arm-fp32") == "fp32"
    assert bundle_label("fp32", "arm-int8") == "int8 weights (opt)"
    assert bundle_label("int8 tables", "arm-fp32") == "int8 tables"
    assert bundle_label("int8 tables", "x86-int8") == "int8 weights (opt) + int8 tables"
    assert bundle_label("int8 PTQ", "arm-fp32") == "int8 PTQ"


def test_int8_tables_file_target_is_the_ratio_to_fp32_base():
    rows = [_arm("base", "fp32", 400.0), _arm("nano", "int8 weights (opt)", 50.0),
            _arm("nano", "int8 weights (opt) + int8 tables", 16.0)]
    lines = targets(rows)
    tables = [line for line in lines if "nano int8 weights (opt) + int8 tables" in line]
    assert len(tables) == 1 and "**25.0x**" in tables[0] and "target >= 20x: met" in tables[0]
    plain = [line for line in lines if "nano int8 weights (opt) ARM" in line]
    assert len(plain) == 1 and "**8.0x**" in plain[0] and "not met" in plain[0]
