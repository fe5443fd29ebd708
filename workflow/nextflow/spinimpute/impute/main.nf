// nf-core-style module for spinimpute impute. UNTESTED: Nextflow cannot run on the machines this
// project is built on (its launcher downloads the runtime). The command line it runs is tested.
process SPINIMPUTE_IMPUTE {
    tag "${meta.id}"
    label 'process_medium'

    container "spinimpute:0.1.0"

    input:
    tuple val(meta), path(target), path(target_index), val(region)
    path model

    output:
    tuple val(meta), path("*.vcf.gz"), path("*.vcf.gz.tbi"), emit: vcf
    tuple val(meta), path("*.summary.json")                , emit: summary
    path "versions.yml"                                     , emit: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def args       = task.ext.args ?: ''
    def prefix     = task.ext.prefix ?: "${meta.id}"
    def region_arg = region ? "--region ${region}" : ''
    """
    spinimpute -q impute \\
        --target ${target} \\
        --model ${model} \\
        --out ${prefix}.vcf.gz \\
        ${region_arg} \\
        --threads ${task.cpus} \\
        ${args}

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        spinimpute: \$(spinimpute --version | sed 's/^spinimpute, version //')
    END_VERSIONS
    """

    stub:
    def prefix = task.ext.prefix ?: "${meta.id}"
    """
    echo "" | gzip > ${prefix}.vcf.gz
    touch ${prefix}.vcf.gz.tbi
    echo '{}' > ${prefix}.summary.json
    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        spinimpute: \$(spinimpute --version | sed 's/^spinimpute, version //')
    END_VERSIONS
    """
}
