"""TD-DETR on the QD-DETR base: the official code's network (paper Sec. 3.2-3.3, supp. Sec. 6)."""
from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import Tensor, nn

from tdfast.model.attention import mask_to_bias
from tdfast.model.config import TDDETRConfig
from tdfast.model.layers import MLP, input_projection, inverse_sigmoid, sine_positions, temporal_endpoints
from tdfast.model.td_interaction import TDInteractionLayer
from tdfast.model.transformer import Decoder, EncoderLayer

# The inference outputs of ``TDDETR.forward``, in the order exported graphs and engines list them.
OUTPUT_NAMES = ("pred_spans", "pred_logits", "saliency_scores")


class TDDETR(nn.Module):
    """Video moment retrieval + highlight detection: the official TD-DETR network (QD-DETR base).

    ``forward(video, video_mask, query, query_mask)``:
      video [B, L, video_dim] float (features as in the files, without TEF),
      video_mask [B, L] bool, query [B, M, text_dim] float, query_mask [B, M] bool
    returns a dict:
      ``pred_spans`` [B, Q, 2] normalized (center, width) in [0, 1] of the video's real length,
      ``pred_logits`` [B, Q, 2] (foreground, background) logits,
      ``saliency_scores`` [B, L] per-clip saliency (unbounded; padding positions are meaningless),
      and, in training mode, ``aux_outputs``: one dict of spans/logits per earlier decoder layer.
    Inputs are not validated here (that would sync a GPU); ``tdfast.retrieval.inputs.check_inputs``
    does it at the API and export boundaries. Masks are applied per sample, so a sample's
    outputs never depend on its batch mates (the official code's T2V mask tiling leaks padding
    across a batch; tdfast equals the official code run one sample at a time).
    """

    def __init__(self, config: TDDETRConfig) -> None:
        super().__init__()
        config.validate()
        self.config = c = config
        d = c.hidden_dim
        # time_locked_dropout (training only): one dropout mask per video and channel on every clip
        # token a temporal difference is taken of: the video projection, every TD layer but the last
        self.video_proj = input_projection(c.model_video_dim, d, c.num_input_proj, c.input_dropout,
                                           locked=c.time_locked_dropout)
        self.text_proj = input_projection(c.text_dim, d, c.num_input_proj, c.input_dropout)
        # TDEM start token st (Eq. 2): one for all TD layers, as in the official code.
        self.start_token = nn.Parameter(torch.randn(d)) if c.use_tdem else None
        self.td_layers = nn.ModuleList(
            TDInteractionLayer(d, c.num_heads, c.ffn_dim, c.dropout, c.use_tdem, c.beta,
                               c.flow_keep_magnitude, c.dyn_null_slot,
                               locked=c.time_locked_dropout and i < c.num_td_layers - 1)
            for i in range(c.num_td_layers))
        self.encoder_layers = nn.ModuleList(
            EncoderLayer(d, c.num_heads, c.ffn_dim, c.dropout) for _ in range(c.num_encoder_layers))
        self.decoder = Decoder(d, c.num_heads, c.ffn_dim, c.dropout, c.num_decoder_layers)
        # Saliency token (QD-DETR's global representation) and its position.
        self.saliency_token = nn.Parameter(torch.randn(d))
        self.saliency_pos = nn.Parameter(torch.randn(d))
        self.saliency_proj_clip = nn.Linear(d, d)
        self.saliency_proj_token = nn.Linear(d, d)
        # Moment queries: learnable (center, width) anchors before the sigmoid.
        self.anchors = nn.Parameter(torch.randn(c.num_queries, 2))
        self.span_head = MLP(d, d, 2, num_layers=3)
        self.class_head = nn.Linear(d, 2)
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        # As the official code: Xavier for every weight matrix inside the transformer (TD
        # layers, encoder, decoder); the projections and heads keep PyTorch's defaults.
        for part in (self.td_layers, self.encoder_layers, self.decoder):
            for p in part.parameters():
                if p.dim() > 1:
                    nn.init.xavier_uniform_(p)

    # ------------------------------------------------------------------ encode
    def project_video(self, video: Tensor, video_mask: Tensor) -> tuple[Tensor, Tensor]:
        """The query-independent part: TEF, input projection, sine positions.

        video [B, L, video_dim], video_mask [B, L] -> tokens V [B, L, D], positions [B, L, D].
        """
        video_mask = video_mask.bool()
        if self.config.use_tef:
            video = torch.cat((video, temporal_endpoints(video_mask).to(video.dtype)), dim=-1)
        v = self.video_proj(video)  # [B, L, D]
        return v, sine_positions(video_mask, v.shape[-1]).to(v.dtype)

    def project_query(self, query: Tensor) -> Tensor:
        """The video-independent part: query [B, M, text_dim] -> text tokens [B, M, D]."""
        return self.text_proj(query)

    def encode(self, video: Tensor, video_mask: Tensor, query: Tensor, query_mask: Tensor
               ) -> tuple[Tensor, Tensor, Tensor]:
        """Projections, TD layers and encoder.

        Returns memory [B, 1+L, D] (saliency token first), positions [B, 1+L, D] and the
        additive key bias [B, 1, 1, 1+L].
        """
        v, pos = self.project_video(video, video_mask)
        return self.encode_projected(v, pos, video_mask, self.project_query(query), query_mask)

    def encode_projected(self, v: Tensor, pos: Tensor, video_mask: Tensor, t: Tensor,
                         query_mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``encode`` from projected inputs: v, pos [B, L, D] (``project_video``), video_mask
        [B, L], t [B, M, D] (``project_query``), query_mask [B, M]."""
        video_mask, query_mask = video_mask.bool(), query_mask.bool()
        text_bias = mask_to_bias(query_mask, v.dtype)  # [B, 1, 1, M]
        for layer in self.td_layers:
            v = layer(v, pos, self.start_token, t, text_bias)
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
        hidden, anchors = self.decoder(self.anchors, memory[:, 1:], pos[:, 1:], bias[..., 1:])
        return [{
            "pred_spans": (self.span_head(h) + inverse_sigmoid(a)).sigmoid(),  # [B, N, 2] cxw
            "pred_logits": self.class_head(h),  # [B, N, 2]
        } for h, a in zip(hidden, anchors)]

    def forward(self, video: Tensor, video_mask: Tensor, query: Tensor, query_mask: Tensor
                ) -> dict[str, Tensor]:
        v, pos = self.project_video(video, video_mask)
        return self.forward_projected(v, pos, video_mask, self.project_query(query), query_mask)

    def forward_projected(self, v: Tensor, pos: Tensor, video_mask: Tensor, t: Tensor,
                          query_mask: Tensor) -> dict[str, Tensor]:
        """``forward`` from projected inputs (see ``encode_projected``): lets one video's
        projection serve many queries, or one query's many videos."""
        memory, pos, bias = self.encode_projected(v, pos, video_mask, t, query_mask)
        layers = self.decode(memory, pos, bias)
        out: dict = {**layers[-1], "saliency_scores": self.saliency(memory)}
        if self.training:  # the auxiliary losses' inputs (tdfast.training.TrainConfig.aux_loss)
            out["aux_outputs"] = layers[:-1]
        return out

    # ------------------------------------------------------------------ io
    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``config.json`` + ``model.safetensors`` atomically into ``directory``."""
        from tdfast.model.checkpoint import save_checkpoint

        return save_checkpoint(directory, self)

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: str | torch.device = "cpu") -> "TDDETR":
        """Load a checkpoint directory written by ``save_pretrained`` (no pickle), in eval mode.
        The config and the safetensors header are checked before any weight is read
        (``tdfast.model.checkpoint``); every problem is an InputError naming the file."""
        from tdfast.devices import parse_device
        from tdfast.model.checkpoint import load_config, load_weights, reading

        device = parse_device(device)  # no CUDA: BackendUnavailableError before any reading
        with reading(directory):  # the config and the weights of one save
            config = load_config(directory)
            state = load_weights(directory, config, cls.tensor_shapes)  # checked before the model is built
        model = cls(config)
        model.load_state_dict(state, strict=True)
        return model.to(device).eval()

    @classmethod
    def tensor_shapes(cls, config: TDDETRConfig) -> dict[str, tuple[int, ...]]:
        """Name -> shape of every weight ``config`` builds, from a model on the ``meta`` device
        (no memory)."""
        with torch.device("meta"):
            return {k: tuple(v.shape) for k, v in cls(config).state_dict().items()}

