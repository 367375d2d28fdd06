"""sms_gateway"""
