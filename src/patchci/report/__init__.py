"""patchci.report"""
