"""barcode"""
