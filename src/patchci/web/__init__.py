"""patchci.web"""
