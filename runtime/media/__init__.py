"""The appliance's media: camera sources (synthetic, files, folders, network streams) and the HDMI output."""

from runtime.media.hdmi import MJPEG_BOUNDARY, MJPEG_CONTENT_TYPE, HdmiSink, Output, Subscription, mjpeg_part
from runtime.media.sources import (
    DEFAULT_SOURCE,
    ArraySource,
    CameraSource,
    Frame,
    ImageFolderSource,
    SceneObject,
    StreamSource,
    SyntheticSource,
    SyntheticSpec,
    VideoFileSource,
    open_source,
)

__all__ = [
    "DEFAULT_SOURCE",
    "MJPEG_BOUNDARY",
    "MJPEG_CONTENT_TYPE",
    "ArraySource",
    "CameraSource",
    "Frame",
    "HdmiSink",
    "ImageFolderSource",
    "Output",
    "SceneObject",
    "StreamSource",
    "Subscription",
    "SyntheticSource",
    "SyntheticSpec",
    "VideoFileSource",
    "mjpeg_part",
    "open_source",
]
