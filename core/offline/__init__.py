"""The offline default of the explain and simulate stages, with no language model: families of tokens people name
in a word (families), what each token of an excerpt is and where it stands (view), the reader that simulates an
explanation (reader), the writer of short phrases from a neuron's statistics (writer), and the token evidence
shown beside an explanation (evidence)."""
