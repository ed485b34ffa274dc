"""Reading plates in an image: decode, detect plates, find text rows, recognize, rank by region grammar.

`reader.PlateReader(cfg).read(image) -> PhotoResult` is the entry point; it knows nothing of the
daemon, the hot list or MQTT.
"""
