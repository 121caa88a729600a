"""Which test images are explained, and which of their classes."""

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from fmnist_shap.errors import UserError

SETS = ("correct", "wrong", "review")  # the tutorial's two sets, then the fixed review set


@dataclass(frozen=True)
class SelectedImages:
    """Which test images are explained, and what the model said about them."""

    test_index_N: np.ndarray
    set_N: np.ndarray  # each image's set: one of SETS
    labels_N: np.ndarray
    logits_NC: np.ndarray

    @property
    def predicted_right_N(self) -> np.ndarray:
        return self.logits_NC.argmax(-1) == self.labels_N

    def rows(self, set_name: str) -> np.ndarray:
        return np.flatnonzero(self.set_N == set_name)

    def explained_classes(self, k: int) -> np.ndarray:
        """The classes explained per image, (N, k): the model's top k for the tutorial's sets;
        for the review set the true class first, then the model's top other classes, so the
        first column is comparable between any two models."""
        ranked_NC = top_classes(self.logits_NC, self.logits_NC.shape[1])
        classes_NK = ranked_NC[:, :k].copy()
        for i in self.rows("review"):
            others = ranked_NC[i][ranked_NC[i] != self.labels_N[i]]
            classes_NK[i] = np.concatenate([[self.labels_N[i]], others])[:k]
        return classes_NK


def select_samples(logits_NC: np.ndarray, labels_N: np.ndarray, per_set: int) -> SelectedImages:
    """The first `per_set` correctly and the first `per_set` wrongly predicted test images."""
    predicted = logits_NC.argmax(-1)
    correct = np.flatnonzero(predicted == labels_N)
    wrong = np.flatnonzero(predicted != labels_N)
    for name, found in (("correct", correct), ("wrong", wrong)):
        if len(found) < per_set:
            raise UserError(
                f"params.yaml: explain.samples_per_set={per_set} but the model has only "
                f"{len(found)} {name} test predictions; lower it"
            )
    index = np.concatenate([correct[:per_set], wrong[:per_set]])
    return SelectedImages(
        test_index_N=index,
        set_N=np.array(["correct"] * per_set + ["wrong"] * per_set),
        labels_N=labels_N[index],
        logits_NC=logits_NC[index],
    )


def review_indices(labels_N: np.ndarray, per_class: int, num_classes: int) -> np.ndarray:
    """The review set: the first `per_class` test images of each class, class by class. It
    depends on the test labels only, so every model explains the very same images."""
    return np.concatenate(
        [np.flatnonzero(labels_N == c)[:per_class] for c in range(num_classes)]
    ).astype(np.int64)


def with_review_set(
    samples: SelectedImages,
    predict: Callable[[np.ndarray], np.ndarray],
    images_NHW: np.ndarray,
    labels_N: np.ndarray,
    per_class: int,
) -> SelectedImages:
    """`samples` followed by the review set (`review_indices`), with the model's logits."""
    index = review_indices(labels_N, per_class, samples.logits_NC.shape[1])
    return SelectedImages(
        test_index_N=np.concatenate([samples.test_index_N, index]),
        set_N=np.concatenate([samples.set_N, np.full(len(index), "review")]),
        labels_N=np.concatenate([samples.labels_N, labels_N[index]]),
        logits_NC=np.concatenate([samples.logits_NC, predict(images_NHW[index])]),
    )


def select_leading_samples(
    predict: Callable[[np.ndarray], np.ndarray],
    images_NHW: np.ndarray,
    labels_N: np.ndarray,
    per_set: int,
    chunk: int = 1024,
) -> SelectedImages:
    """`select_samples` over the test set, predicting only as many leading images as it takes
    to find `per_set` correct and `per_set` wrong predictions (the same images either way)."""
    parts: list[np.ndarray] = []
    for start in range(0, len(images_NHW), chunk):
        parts.append(predict(images_NHW[start : start + chunk]))
        predicted = np.concatenate(parts).argmax(-1)
        correct = int((predicted == labels_N[: len(predicted)]).sum())
        if correct >= per_set and len(predicted) - correct >= per_set:
            break
    logits_NC = np.concatenate(parts)
    return select_samples(logits_NC, labels_N[: len(logits_NC)], per_set)


def top_classes(logits_NC: np.ndarray, k: int) -> np.ndarray:
    """Class indices by decreasing logit; ties broken by class index, so it is stable."""
    return np.argsort(-logits_NC, axis=-1, kind="stable")[:, :k]
