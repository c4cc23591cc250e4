"""Fidelity to the paper: the zero-mask spurious-correlation analysis (Table 2), the
component ablation and alpha / beta sweeps (Table 4, S1, S2), the paper-scale recipe."""
from tdfast.experiments.masking import gt_clip_mask, zero_gt_clips
from tdfast.experiments.metrics import TABLE2_KEYS, table2_metrics, top1_giou_loss
from tdfast.experiments.spurious import format_report, spurious_analysis

__all__ = ["TABLE2_KEYS", "format_report", "gt_clip_mask", "spurious_analysis", "table2_metrics",
           "top1_giou_loss", "zero_gt_clips"]
