"""Item encoders: text, image, captions and price features from raw catalogues."""
