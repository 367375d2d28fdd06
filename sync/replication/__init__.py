"""sync/replication"""
