"""The demo's music recommender: a generated world of tracks and listeners (``world``), the hosted
models the ``nightly-recs`` system scores with (``models``), and how they are registered and
combined (``ensemble``)."""
