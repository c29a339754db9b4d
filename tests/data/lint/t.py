import os


def main():
    x = 1
    print(undefined_name)
    return os.path.join("a","b")
