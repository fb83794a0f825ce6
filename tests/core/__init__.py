"""The store's leaf pieces: file format, ids, keys, serializers, settings, the filesystem layer, events."""
