"""device_registry"""
