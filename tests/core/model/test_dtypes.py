import torch

from shortgpt_desktop.core.model.dtypes import bytes_per_element, dtype_name


def test_dtype_name_is_the_bare_name_configs_write() -> None:
    assert dtype_name(torch.bfloat16) == "bfloat16"
    assert dtype_name(torch.float32) == "float32"
    assert dtype_name("float16") == "float16"  # a name already bare is kept


def test_bytes_per_element_reads_torch_and_safetensors_names() -> None:
    assert bytes_per_element("bfloat16") == 2
    assert bytes_per_element("torch.float32") == 4
    assert bytes_per_element("F8_E4M3") == 1
    assert bytes_per_element("complex32", default=3.0) == 3.0
    assert bytes_per_element(None) == 4.0
