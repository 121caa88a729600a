"""The image maskers' ids: params.yaml's spelling and shap's."""

# Masker id → what it is: shap's blur masker with a kernel the size of the image, or one of
# OpenCV's two inpainting algorithms (`shap_masker` gives shap's own spelling).
MASKERS = {"blur": "blur(H,W)", "telea": "inpaint_telea", "ns": "inpaint_ns"}


def shap_masker(masker: str, image_hw: tuple[int, int]) -> str:
    """shap's name of a masker for images of this size: 'blur(28,28)', 'inpaint_telea'."""
    height, width = image_hw
    return f"blur({height},{width})" if masker == "blur" else MASKERS[masker]
