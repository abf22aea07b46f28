"""``python -m engine ...`` runs the ``cai`` command line (``accelerate launch ... -m engine train ...`` needs it)."""

from engine.cli import main

if __name__ == "__main__":
    main()
