"""`python -m engine.models`: download a model, build a built-in one, fetch the tokenizer files
(see `engine.models.sources`)."""

import sys

from engine.models.sources import main

sys.exit(main())
