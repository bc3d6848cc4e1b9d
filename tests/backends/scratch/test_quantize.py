import pytest
import torch
from torch import nn

from assistant import chatml
from backends.scratch import quantize
from backends.scratch.backend import apply_precision
from backends.scratch.quantize import Int8Linear
from backends.scratch.weights import load_model
from backends.tokenizer import ChatTokenizer


def test_int8_weights_round_to_the_nearest_step_of_their_row():
    torch.manual_seed(0)
    linear = nn.Linear(64, 32, bias=True)
    with torch.no_grad():
        linear.weight[3] *= 50  # one row with a much larger range keeps its own scale
    q = Int8Linear(linear)
    assert q.weight.dtype == torch.int8 and q.weight.abs().max() == 127
    step = linear.weight.abs().amax(dim=1, keepdim=True) / 127
    error = (q.dequantized() - linear.weight).abs()
    # half a step of rounding, plus the scale's own rounding to bf16 (8 significant bits)
    assert bool((error <= step / 2 + linear.weight.abs() * 2**-8).all())


@pytest.mark.parametrize("rows", [1, quantize.FUSED_MAX_ROWS + 1])
def test_int8_linear_multiplies_by_the_dequantized_weight(rows):
    # both paths: the fused kernel (decode steps) and the dequantized matmul (prefills)
    torch.manual_seed(0)
    linear = nn.Linear(96, 40, bias=True)
    q = Int8Linear(linear)
    x = torch.randn(1, rows, 96)
    expected = x.bfloat16().float() @ q.dequantized().T + linear.bias.detach()
    got = q(x)
    assert got.shape == (1, rows, 40) and got.dtype == torch.bfloat16
    assert torch.allclose(got.float(), expected, atol=0.05, rtol=0.02)


def decisive(reference: torch.Tensor, margin: float) -> torch.Tensor:
    """Positions where the reference's top token leads the runner-up by at least `margin` logits."""
    top2 = reference.float().topk(2, dim=-1).values
    return top2[..., 0] - top2[..., 1] >= margin


# Where fp32 is this sure of its next token, int8's rounding must not change it. Measured on a 2-core
# AVX2 EPYC over 1,800 teacher-forced positions of three texts (600 each): int8 lowered fp32's lead
# of its top token by at most 0.81 logits (99th percentile 0.59), and every flip was at a position
# fp32 led by under 0.4. The bar is 1.85x the worst drop seen. How near-ties flip depends on the
# CPU's bf16 kernels (AMX, AVX-512 or AVX2): overall agreement there was 0.945-0.963 (0.940 on the
# text below), and a bar on all positions of a 52-token text passed on one machine and failed on
# another.
DECISIVE_LOGITS = 1.5

def test_int8_model_keeps_the_tied_embedding_and_predicts_like_fp32(tiny_llama_dir):
    model = load_model(tiny_llama_dir).fuse_for_inference()
    ids = torch.randint(0, model.config.vocab_size, (1, 40), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        reference = model(ids)[0]
    embedding = model.embedding.weight.detach().clone()
    quantized = apply_precision(model, "int8")
    assert isinstance(quantized.output, Int8Linear)
    assert torch.equal(quantized.embedding.weight.float(), embedding.bfloat16().float())
    with torch.inference_mode():
        logits = quantized(ids)[0].float()
    sure = decisive(reference, 0.15)  # a random model's logits are small (std ~0.17), and so are its leads
    assert int(sure.sum()) >= 10
    assert torch.equal(logits.argmax(-1)[sure], reference.argmax(-1)[sure])


STORY = """\
Every autumn the village held a market on the square behind the old mill. Farmers drove in before
dawn with carts of apples, pears and late plums, and the baker opened his shutters an hour early so
that the smell of bread drifted across the stalls. Children ran between the tables while their
parents argued about the price of cheese, and the blacksmith, who had nothing to sell, stood by the
fountain telling anyone who would listen that the winter would be long.

The miller's daughter kept the accounts. She wrote each sale in a narrow green ledger, noting the
weight of the flour, the name of the buyer and whether they had paid in coins or in promises. Her
father trusted nobody's arithmetic but hers, and by noon she could tell him exactly how many sacks
were left and which families still owed him from the spring.

In the afternoon the weather turned. Clouds came over the hills from the west, the wind lifted the
canvas roofs, and the first drops of rain sent everyone hurrying to pack. The farmers covered their
fruit with sacks, the baker pulled in his trays, and within half an hour the square was empty except
for the blacksmith, who stood in the rain looking pleased that he had been right.

That evening the family sat by the stove and counted the day's takings. There was more than the year
before, though not as much as they had hoped, and the miller decided to repair the water wheel before
the frost instead of buying a second horse. His daughter closed the ledger, blew out the lamp, and
listened to the rain on the roof until she fell asleep.
"""


@pytest.mark.slow
def test_int8_smollm2_predicts_the_same_next_token_as_fp32(smollm2_dir):
    # Activation quantization (torch.ao dynamic int8) agreed on 33% of positions and decoded
    # garbage; weight-only int8 must not change any next token fp32 is sure of.
    tokenizer = ChatTokenizer.from_file(smollm2_dir)
    messages = [{"role": "user", "content": "Tell me a story about a village market."},
                {"role": "assistant", "content": STORY}]
    ids = torch.tensor([chatml.encode(messages, tokenizer).ids])
    model = load_model(smollm2_dir).fuse_for_inference()
    with torch.inference_mode():
        reference = model(ids)[0]
        predicted = apply_precision(model, "int8")(ids)[0].argmax(-1)
    sure = decisive(reference, DECISIVE_LOGITS)
    assert int(sure.sum()) >= 100
    assert torch.equal(predicted[sure], reference.argmax(-1)[sure])
