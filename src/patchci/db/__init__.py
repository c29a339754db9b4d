"""patchci.db"""
