"""patchci.analysis"""
