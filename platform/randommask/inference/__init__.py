"""Using a trained model on a genome, as Ray Data batch inference.

    fasta     random access into plain, bgzip or gzip FASTA, local or s3:// (pyfaidx)
    regions   BED intervals checked against the genome, tiles that fit the model
    runtime   a model per actor, the Ray Data pipeline to Parquet, resume
    embed     ``randommask embed``: a vector per region
    variants  ``randommask score-variants``: zero-shot masked-LM scores of SNVs
"""
