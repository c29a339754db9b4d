"""patchci.executor"""
