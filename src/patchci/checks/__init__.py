"""patchci.checks"""
