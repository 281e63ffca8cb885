"""One-command pipelines (`densekit pipeline run --config FILE`): the stages a user would
otherwise chain by hand (mine, train the bi-encoder, build the index, tune fusion, train the
reranker, evaluate, write a servable folder), each skipped while its stamp matches its
config and its inputs. See docs/pipelines.md."""
