"""mlink-bridge: SpiderRock MLink live-data streams into compacted Kafka topics."""

__version__ = "0.1.0"
