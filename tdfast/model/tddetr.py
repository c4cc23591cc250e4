"""TD-DETR on the QD-DETR base: the network (paper Sec. 3.2-3.3, supp. Sec. 6)."""
from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import Tensor, nn

from tdfast.model.attention import mask_to_bias
from tdfast.model.config import TDDETRConfig
from tdfast.model.layers import MLP, input_projection, inverse_sigmoid, sine_positions, temporal_endpoints
from tdfast.model.td_interaction import TDInteractionLayer
from tdfast.model.transformer import DecoderLayer, EncoderLayer


class TDDETR(nn.Module):
    """Video moment retrieval + highlight detection.

    ``forward(video, video_mask, query, query_mask)``:
      video [B, L, video_dim] float (features as in the files, without TEF),
      video_mask [B, L] bool, query [B, M, text_dim] float, query_mask [B, M] bool
    returns a dict:
      ``pred_spans`` [B, Q, 2] normalized (center, width) in [0, 1] of the video's real length,
      ``pred_logits`` [B, Q, 2] (foreground, background) logits,
      ``saliency_scores`` [B, L] per-clip saliency (unbounded; padding positions are meaningless),
      and, in training mode with ``aux_loss``, ``aux_outputs``: one dict of spans/logits per
      earlier decoder layer.
    Inputs are not validated here (that would sync a GPU); ``tdfast.model.inputs.check_inputs``
    does it at the API and export boundaries.
    """

    def __init__(self, config: TDDETRConfig) -> None:
        super().__init__()
        config.validate()
        self.config = c = config
        d = c.hidden_dim
        self.video_proj = input_projection(c.model_video_dim, d, c.num_input_proj, c.input_dropout)
        self.text_proj = input_projection(c.text_dim, d, c.num_input_proj, c.input_dropout)
        self.td_layers = nn.ModuleList(
            TDInteractionLayer(d, c.num_heads, c.ffn_dim, c.dropout, c.use_tdem, c.beta)
            for _ in range(c.num_td_layers))
        self.encoder_layers = nn.ModuleList(
            EncoderLayer(d, c.num_heads, c.ffn_dim, c.dropout) for _ in range(c.num_encoder_layers))
        self.decoder_layers = nn.ModuleList(
            DecoderLayer(d, c.num_heads, c.ffn_dim, c.dropout) for _ in range(c.num_decoder_layers))
        self.decoder_norm = nn.LayerNorm(d)
        # Saliency token (QD-DETR's global representation) and its position.
        self.saliency_token = nn.Parameter(torch.randn(d) * 0.02)
        self.saliency_pos = nn.Parameter(torch.randn(d) * 0.02)
        self.saliency_proj_clip = nn.Linear(d, d)
        self.saliency_proj_token = nn.Linear(d, d)
        # Moment queries: content position embeddings + learnable reference spans.
        self.query_pos = nn.Parameter(torch.randn(c.num_queries, d) * 0.02)
        self.reference_spans = nn.Parameter(_initial_reference_spans(c.num_queries))
        self.span_head = MLP(d, d, 2, num_layers=3)
        self.class_head = nn.Linear(d, 2)
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        # Xavier init of every weight matrix (paper Sec. 4.1); the last span layer starts at 0
        # so initial predictions are the reference spans.
        for name, p in self.named_parameters():
            if p.dim() > 1 and name not in ("query_pos", "reference_spans"):
                nn.init.xavier_uniform_(p)
        nn.init.zeros_(self.span_head.layers[-1].weight)
        nn.init.zeros_(self.span_head.layers[-1].bias)

    # ------------------------------------------------------------------ encode
    def encode(self, video: Tensor, video_mask: Tensor, query: Tensor, query_mask: Tensor
               ) -> tuple[Tensor, Tensor, Tensor]:
        """Projections, TD interaction and encoder.

        Returns memory [B, 1+L, D] (saliency token first), positions [B, 1+L, D] and the
        additive key bias [B, 1, 1, 1+L].
        """
        video_mask, query_mask = video_mask.bool(), query_mask.bool()
        if self.config.use_tef:
            video = torch.cat((video, temporal_endpoints(video_mask).to(video.dtype)), dim=-1)
        v = self.video_proj(video)  # [B, L, D]
        t = self.text_proj(query)  # [B, M, D]
        pos = sine_positions(video_mask, v.shape[-1]).to(v.dtype)  # [B, L, D]
        text_bias = mask_to_bias(query_mask, v.dtype)  # [B, 1, 1, M]
        for layer in self.td_layers:
            v = layer(v, pos, t, text_bias)
        b = v.shape[0]
        x = torch.cat((self.saliency_token.to(v.dtype).expand(b, 1, -1), v), dim=1)  # [B, 1+L, D]
        pos = torch.cat((self.saliency_pos.to(v.dtype).expand(b, 1, -1), pos), dim=1)
        mask = torch.cat((video_mask.new_ones(b, 1), video_mask), dim=1)  # [B, 1+L]
        bias = mask_to_bias(mask, v.dtype)
        for layer in self.encoder_layers:
            x = layer(x, pos, bias)
        return x, pos, bias

    def saliency(self, memory: Tensor) -> Tensor:
        """memory [B, 1+L, D] -> clip saliency [B, L]: clip-token similarity (QD-DETR)."""
        clips = self.saliency_proj_clip(memory[:, 1:])  # [B, L, D]
        token = self.saliency_proj_token(memory[:, :1])  # [B, 1, D]
        return (clips * token).sum(-1) / math.sqrt(memory.shape[-1])

    # ------------------------------------------------------------------ decode
    def decode(self, memory: Tensor, pos: Tensor, bias: Tensor) -> list[dict[str, Tensor]]:
        """Moment queries over the video memory (saliency token excluded); one dict per layer."""
        mem, mem_pos, mem_bias = memory[:, 1:], pos[:, 1:], bias[..., 1:]
        b = memory.shape[0]
        query_pos = self.query_pos.to(memory.dtype).expand(b, -1, -1)  # [B, N, D]
        tgt = torch.zeros_like(query_pos)
        reference = inverse_sigmoid(self.reference_spans).to(memory.dtype)  # [N, 2]
        outputs = []
        for layer in self.decoder_layers:
            tgt = layer(tgt, query_pos, mem, mem_pos, mem_bias)
            hs = self.decoder_norm(tgt)
            outputs.append({
                "pred_spans": torch.sigmoid(self.span_head(hs) + reference),  # [B, N, 2] cxw
                "pred_logits": self.class_head(hs),  # [B, N, 2]
            })
        return outputs

    def forward(self, video: Tensor, video_mask: Tensor, query: Tensor, query_mask: Tensor
                ) -> dict[str, Tensor]:
        memory, pos, bias = self.encode(video, video_mask, query, query_mask)
        layers = self.decode(memory, pos, bias)
        out: dict = {**layers[-1], "saliency_scores": self.saliency(memory)}
        if self.training and self.config.aux_loss:
            out["aux_outputs"] = layers[:-1]
        return out

    # ------------------------------------------------------------------ io
    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``config.json`` + ``model.safetensors`` atomically into ``directory``."""
        from tdfast.checkpoint import save_checkpoint

        return save_checkpoint(directory, self)

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: str | torch.device = "cpu") -> "TDDETR":
        """Load a checkpoint directory written by ``save_pretrained`` (no pickle)."""
        from tdfast.checkpoint import load_checkpoint

        return load_checkpoint(directory, device)


def _initial_reference_spans(n: int) -> Tensor:
    """n spans spread over the video: centers on a grid, widths cycling short -> long. [n, 2]."""
    centers = (torch.arange(n, dtype=torch.float32) + 0.5) / n
    widths = torch.tensor([0.1, 0.25, 0.5], dtype=torch.float32).repeat(n)[:n]
    return torch.stack((centers, widths), dim=-1)
