"""shap adapters for the image maskers: the predict function shap calls (counting rows, float32
pixels), and the blur masker with its rows built in the model call."""

from collections.abc import Callable

import numpy as np
import shap


class CountingModel:
    """Wraps the predict function: counts rows, and keeps shap's inputs as float32 pixels."""

    def __init__(self, predict: Callable[[np.ndarray], np.ndarray]):
        self.predict = predict
        self.rows = 0

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        self.rows += len(pixels)
        return self.predict(np.asarray(pixels, dtype=np.float32))


def forget_image(masker: shap.maskers.Image) -> None:
    """Drop what the masker kept of the previous image: shap's cached blurred image, so the
    next call blurs the image it is given, and the coalitions `RememberingImageMasker`
    inpainted.

    shap's Image masker keys its blur cache by `id()` of a temporary view of its input, and
    CPython reuses the ids of freed objects: the first coalition of the next image can then be
    masked with the previous image's blur. Seen here: one image's base value off by 1 logit
    under Python 3.13 and not 3.12, from the same code and weights.
    """
    masker.last_xid = None
    if isinstance(masker, RememberingImageMasker):
        masker.inpainted.clear()


class RememberingImageMasker(shap.maskers.Image):
    """shap's image masker that inpaints each coalition of an image once.

    shap calls the masker once per coalition, and Partition's tree walk asks for the same
    coalition again (measured, 18 images: 17% of a walk's coalitions are repeats, and the
    walks of the trained and the re-initialised model share 6.4k of their 7.5k each); the
    OpenCV inpainting is most of an inpaint variant's time. The pixels are shap's own
    (`Image.inpaint`), remembered by coalition until `forget_image` — call it before each new
    image (the key is the mask alone)."""

    def __init__(self, mask_value, shape=None):
        super().__init__(mask_value, shape)
        self.inpainted: dict[tuple[str, bytes], np.ndarray] = {}

    def inpaint(self, x, mask, method):
        key = (method, np.packbits(mask).tobytes())
        pixels = self.inpainted.get(key)
        if pixels is None:
            pixels = self.inpainted[key] = super().inpaint(x, mask, method)
        return pixels.copy()  # shap may write into what it gets


class BlendingBlurMasker(shap.maskers.Image):
    """shap's `blur(…)` image masker with the masking moved into the model call.

    shap calls its masker once per coalition (1569 times per Permutation image), and the Image
    masker copies the image and blurs it each time. This one returns the coalition's mask
    itself; `BlendingModel` then builds every row of a batch in one vectorised step, from the
    image and the blurred image that shap's own masker produces. The pixels the model sees are
    the same, so the explanations are too (tested); the partition tree, shapes and everything
    else shap reads from the masker are inherited.
    """

    def __call__(self, mask: np.ndarray, x: np.ndarray) -> tuple[np.ndarray]:
        return (np.array(mask, dtype=bool).reshape(1, -1),)

    def fill(self, x: np.ndarray) -> np.ndarray:
        """The fully masked image, flat: what shap's masker puts where the mask is False."""
        features = int(np.prod(self.input_shape))
        forget_image(self)
        return super().__call__(np.zeros(features, dtype=bool), x)[0].ravel()


class BlendingModel:
    """The model side of `BlendingBlurMasker`: masks (N, H·W) → pixels → `model` rows."""

    def __init__(self, model: Callable[[np.ndarray], np.ndarray], image_shape: tuple[int, ...]):
        self.model = model
        self.image_shape = image_shape
        self.image = self.filled = np.zeros(0, np.float32)

    def set_image(self, image: np.ndarray, filled: np.ndarray) -> None:
        self.image, self.filled = image.ravel(), filled

    def __call__(self, masks: np.ndarray) -> np.ndarray:
        pixels = np.where(masks, self.image, self.filled)
        return self.model(pixels.reshape(len(masks), *self.image_shape))
