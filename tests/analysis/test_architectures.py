import torch
from torch import nn
from transformers import AutoModelForCausalLM

from analysis.architectures import count_parameters, weight_bytes
from tests.tiny_models import VOCAB, tiny_config, tiny_model


def test_count_parameters_dedupes_shared_storage():
    class Tied(nn.Module):
        def __init__(self, dtype):
            super().__init__()
            self.a = nn.Linear(4, 3, bias=False, dtype=dtype)
            self.b = nn.Linear(4, 3, bias=True, dtype=dtype)
            self.b.weight = nn.Parameter(self.a.weight.data)  # distinct object, same storage

    tied = Tied(torch.float32)
    assert len(list(tied.parameters())) == 3
    assert count_parameters(tied) == 12 + 3
    assert weight_bytes(tied) == 4 * (12 + 3)
    assert weight_bytes(Tied(torch.float16)) == 2 * (12 + 3)

    config = tiny_config("llama")
    config.tie_word_embeddings = True
    model = AutoModelForCausalLM.from_config(config)
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    untied = tiny_model("llama")
    assert count_parameters(untied) - count_parameters(model) == VOCAB * config.hidden_size




def test_post_norm_opt_reads_the_attention_residual_after_its_norm():
    from analysis.architectures import get_architecture

    pre = get_architecture(tiny_config("opt"))
    config = tiny_config("opt")
    config.do_layer_norm_before = False  # OPT-350m
    post = get_architecture(config)
    assert pre.attn_residual == ("final_layer_norm", "input")
    assert post.attn_residual == ("self_attn_layer_norm", "output")
    assert (post.family, post.layers_path, post.attn_name, post.mlp, post.layer_config_lists) == (
        pre.family, pre.layers_path, pre.attn_name, pre.mlp, pre.layer_config_lists)
