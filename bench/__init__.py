"""`make bench`: the decision endpoints under load, next to a bare Django view and a raw COPY."""
