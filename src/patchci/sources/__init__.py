"""patchci.sources"""
