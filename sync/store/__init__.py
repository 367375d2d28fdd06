"""sync/store"""
