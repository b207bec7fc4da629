"""Classification metrics from labels and probabilities (numpy only)."""

from __future__ import annotations

import numpy as np


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float | None:
    """Area under the ROC curve via the rank-sum statistic (ties averaged)."""
    pos, neg = positive.sum(), (~positive).sum()
    if pos == 0 or neg == 0:
        return None
    order = scores.argsort(kind="mergesort")
    ranks = np.empty(len(scores), dtype=np.float64)
    sorted_scores = scores[order]
    i = 0
    while i < len(scores):
        j = i
        while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[positive].sum() - pos * (pos + 1) / 2) / (pos * neg))


def classification_metrics(labels: np.ndarray, probs: np.ndarray, classes: list[str]) -> dict:
    """Accuracy, balanced accuracy, per-class P/R/F1/support, confusion matrix, OvR ROC-AUC."""
    k = len(classes)
    pred = probs.argmax(1) if len(probs) else np.zeros(0, dtype=int)
    confusion = np.zeros((k, k), dtype=np.int64)
    np.add.at(confusion, (labels, pred), 1)
    per_class = {}
    recalls, f1s, aucs = [], [], []
    for c, name in enumerate(classes):
        tp = confusion[c, c]
        support = confusion[c].sum()
        predicted = confusion[:, c].sum()
        precision = tp / predicted if predicted else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        auc = roc_auc(probs[:, c], labels == c) if len(probs) else None
        per_class[name] = {
            "precision": float(precision),
            "recall": float(recall),
            "f1": float(f1),
            "support": int(support),
            "roc_auc": auc,
        }
        if support:
            recalls.append(recall)
            f1s.append(f1)
        if auc is not None:
            aucs.append(auc)
    n = int(confusion.sum())
    return {
        "samples": n,
        "accuracy": float(np.trace(confusion) / n) if n else 0.0,
        "balanced_accuracy": float(np.mean(recalls)) if recalls else 0.0,
        "macro_f1": float(np.mean(f1s)) if f1s else 0.0,
        "roc_auc": float(np.mean(aucs)) if aucs else None,
        "per_class": per_class,
        "confusion_matrix": confusion.tolist(),
        "classes": classes,
    }
