"""Typed configuration: the sections (`schema`) and reading the YAML file (`load`).

Everything is importable from `alprd.config` itself.
"""

from .base import CREDENTIALS, Section
from .capture import DAYS, CaptureConfig, CaptureWindow, GeofenceConfig, ScheduleConfig
from .load import MAX_CONFIG_BYTES, MAX_CONFIG_DEPTH, key_lines, load_config, parse_config
from .schema import (
    DETECTOR_MODELS,
    MAX_CAMERAS,
    PACKAGE_MODELS_DIR,
    PHOTO_READER,
    CameraConfig,
    Config,
    DetectorModel,
    GpsdConfig,
    HotlistConfig,
    LocationConfig,
    MatchingConfig,
    MetricsConfig,
    MotionConfig,
    MqttConfig,
    MqttTlsConfig,
    PolicyConfig,
    PrivacyConfig,
    ReaderConfig,
    Region,
    SourceConfig,
    StorageConfig,
    TrackingConfig,
    config_hash,
)

__all__ = [
    "CREDENTIALS", "DAYS", "DETECTOR_MODELS", "MAX_CAMERAS", "MAX_CONFIG_BYTES", "MAX_CONFIG_DEPTH",
    "PACKAGE_MODELS_DIR", "PHOTO_READER", "CameraConfig", "CaptureConfig", "CaptureWindow", "Config",
    "DetectorModel", "GeofenceConfig", "GpsdConfig", "HotlistConfig", "LocationConfig", "MatchingConfig",
    "MetricsConfig", "MotionConfig", "MqttConfig", "MqttTlsConfig", "PolicyConfig", "PrivacyConfig",
    "ReaderConfig", "Region", "ScheduleConfig", "Section", "SourceConfig", "StorageConfig",
    "TrackingConfig", "config_hash", "key_lines", "load_config", "parse_config",
]
