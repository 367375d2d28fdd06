"""sync/conflicts"""
