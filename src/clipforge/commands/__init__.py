"""CLI layer: flags -> typed values -> library calls. The library never sees argparse."""
